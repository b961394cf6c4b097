"""Command line: `sagewire serve`, `sagewire local`, `sagewire check-config`."""

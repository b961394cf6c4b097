"""Adapters to AWS on aioboto3. AWS errors become domain errors here, in one place."""

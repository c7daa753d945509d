"""Publishing: S3 upload with SHA-256 verification (s3.py), then Greengrass v2 registration (greengrass.py), in an
order safe to retry (component.py); clients.py makes the two clients from the environment."""

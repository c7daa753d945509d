def client(home=None):
    """A boto3-shaped ``lookoutvision`` client over the local job store (packager/client.py); imported lazily."""
    from packager.client import LookoutVisionClient

    return LookoutVisionClient(home)

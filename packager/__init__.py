def client(home=None):
    """A boto3-shaped ``lookoutvision`` client over the local job store (packager/service/client.py); imported lazily."""
    from packager.service.client import LookoutVisionClient

    return LookoutVisionClient(home)

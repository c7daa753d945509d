"""The local REST server: the Lookout for Vision REST-JSON protocol over the jobs API, behind SigV4."""

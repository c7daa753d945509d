"""The on-device runtime. Shipped inside the component's artifact as the package ``lookout_edge``.

Everything here imports only the standard library, numpy and the TVM runtime
(grpcio for the agent): it must run on a device with no compiler and no packager.
"""

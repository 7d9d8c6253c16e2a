"""Code that runs inside the service. It travels inside every bento as ``nbdeploy_runtime``.

Only the standard library, numpy, pandas and cloudpickle may be imported here (plus bentoml in
``service.py``): the package nbdeploy itself is not installed where the service runs.
"""

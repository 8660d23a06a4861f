"""The front process: the gRPC server and servicer, tenants, and the ``Dialogue`` that runs one round.

Imports no torch (a test walks every module here): the model runs in ``serving.replicas``, reached
through the ``serving.pipeline`` handles. The DICOM and HTTP edges (``serving.dicom``, ``serving.http``)
run in this process too.
"""

"""Fixtures for the DICOM tests: a real Orthanc PACS (see ``orthanc.py``)."""

from tests.serving.dicom.orthanc import (  # noqa: F401 (fixtures, registered by being imported here)
    orthanc,
    orthanc_process,
    orthanc_with_users,
    orthanc_with_users_process,
)

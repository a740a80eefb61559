"""The OHIF Viewer, served next to the local DICOMweb server (`python -m viewer`)."""

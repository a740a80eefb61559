"""A DIMSE gateway: C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET over the same storage and index as the DICOMweb app."""

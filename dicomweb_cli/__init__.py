"""`dicomweb`: a command-line client for any DICOMweb service (upload folders, search, download studies)."""

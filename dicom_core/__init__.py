"""DICOMweb services (STOW-RS, WADO-RS, QIDO-RS, delete) on Azure Blob and Table Storage.

Independent of the Azure Functions runtime: ``function_app.py`` and ``local_host`` translate HTTP
into calls of this package.
"""

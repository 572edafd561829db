"""Data management on files: transferFile (HTTP(S) download or inbox) and decompress."""

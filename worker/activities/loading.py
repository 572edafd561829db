"""Data management on tables: loadFile (CSV to a working table), updateData, extractFile."""

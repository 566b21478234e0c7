"""The only package that imports napari or Qt: reader, writer, sample data, widgets."""

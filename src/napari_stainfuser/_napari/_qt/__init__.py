"""The Qt dock widgets: thin views over the models in ``_napari``."""

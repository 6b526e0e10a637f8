"""A second, non-segmentation task kind (toy classification) run through the unchanged table runner."""

from segmend.viz.overlay import blend, colorize, denormalize, label_grid, overlay_grid

__all__ = ["blend", "colorize", "denormalize", "label_grid", "overlay_grid"]

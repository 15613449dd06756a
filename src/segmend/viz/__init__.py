from segmend.viz.overlay import blend, colorize, denormalize, overlay_grid

__all__ = ["blend", "colorize", "denormalize", "overlay_grid"]

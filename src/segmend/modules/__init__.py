from segmend.modules.ancillary import AncillaryModule
from segmend.modules.arm import ARMModule
from segmend.modules.decoder_baselines import GAUDecoderModule, LayerCascadeModule
from segmend.modules.error_pixel import ErrorPixelModule
from segmend.modules.segmentation import SegmentationModule
from segmend.modules.selfcorr import SelfCorrectionModule

__all__ = [
    "AncillaryModule",
    "ARMModule",
    "ErrorPixelModule",
    "GAUDecoderModule",
    "LayerCascadeModule",
    "SegmentationModule",
    "SelfCorrectionModule",
]

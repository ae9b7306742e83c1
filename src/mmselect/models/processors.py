"""Image-only processors for architectures whose stock processor also builds a video processor
(which needs torchvision). Used for real checkpoints and the tiny test models alike."""

from __future__ import annotations

from transformers.processing_utils import ProcessorMixin


def _image_only_qwen_processor(base):
    """A Qwen2(.5)-VL processor without the video processor (which needs torchvision)."""

    class ImageOnlyProcessor(base):
        attributes = ["image_processor", "tokenizer"]

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnlyProcessor.__name__ = f"ImageOnly{base.__name__}"
    return ImageOnlyProcessor


def image_only_qwen2_vl_processor():
    from transformers import Qwen2VLProcessor

    return _image_only_qwen_processor(Qwen2VLProcessor)


def image_only_qwen2_5_vl_processor():
    from transformers import Qwen2_5_VLProcessor

    return _image_only_qwen_processor(Qwen2_5_VLProcessor)


def image_only_llava_onevision_processor():
    """A LLaVA-OneVision processor without the video processor (which needs torchvision)."""
    from transformers import LlavaOnevisionProcessor

    class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
        attributes = ["image_processor", "tokenizer"]

        def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                     vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                     vision_aspect_ratio="anyres_max_9", **kwargs):
            self.num_image_tokens = num_image_tokens
            self.vision_feature_select_strategy = vision_feature_select_strategy
            self.image_token = getattr(tokenizer, "image_token", None) or image_token
            self.video_token = "<video>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.vision_aspect_ratio = vision_aspect_ratio
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyLlavaOnevisionProcessor

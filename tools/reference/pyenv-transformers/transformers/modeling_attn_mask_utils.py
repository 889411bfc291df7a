"""Named placeholders: T5's decoder causal mask and CLIP's text-model masks; neither path runs here (the T5 encoder
builds its padding mask itself, the vision model has none)."""


class AttentionMaskConverter:
    @staticmethod
    def _ignore_causal_mask_sdpa(*args, **kwargs):
        raise NotImplementedError("decoder masks are not part of the reference environment")

    @staticmethod
    def _unmask_unattended(*args, **kwargs):
        raise NotImplementedError("decoder masks are not part of the reference environment")


def _create_4d_causal_attention_mask(*args, **kwargs):
    raise NotImplementedError("CLIP's text model is not part of this reference environment")


def _prepare_4d_attention_mask(*args, **kwargs):
    raise NotImplementedError("CLIP's text model is not part of this reference environment")

"""PreTrainedModel as a thin nn.Module base: keeps the config, builds sub-models from a config (_from_config), and
answers get_head_mask for "no head mask". Weights are loaded by the scripts with load_state_dict(strict=True), so
post_init draws nothing (transformers' _init_weights would be overwritten anyway) and ties nothing (T5EncoderModel
passes the same nn.Embedding to its encoder, so encoder.embed_tokens IS shared)."""
import copy

from torch import nn


class PreTrainedModel(nn.Module):
    config_class = None
    base_model_prefix = ""
    main_input_name = "input_ids"

    def __init__(self, config, *inputs, **kwargs):
        super().__init__()
        self.config = config

    def post_init(self):
        pass

    @classmethod
    def _from_config(cls, config, **kwargs):
        config = copy.deepcopy(config)
        attn_implementation = kwargs.pop("attn_implementation", None)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        return cls(config, **kwargs)

    def get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
        if head_mask is not None:
            raise NotImplementedError("head masks are not part of the reference environment")
        return [None] * num_hidden_layers

    def invert_attention_mask(self, encoder_attention_mask):
        raise NotImplementedError("the decoder's cross-attention mask is not part of the reference environment")


# The attention functions transformers registers by name ("sdpa", "flash_attention_2", ...). Empty here: the configs
# keep _attn_implementation = "eager", which the model files resolve to their own eager_attention_forward.
ALL_ATTENTION_FUNCTIONS = {}

"""PretrainedConfig, reduced to what the T5 / CLIP configs and models read: the common defaults (return_dict,
output_hidden_states, output_attentions, is_decoder, tie_word_embeddings, token ids, ...), every other keyword kept
as an attribute (as transformers does), attribute_map aliases (T5's hidden_size -> d_model), use_return_dict, and
_attn_implementation, which is "eager" (transformers' own softmax attention) unless set."""


class PretrainedConfig:
    model_type = ""
    attribute_map = {}

    def __setattr__(self, key, value):
        if key in super().__getattribute__("attribute_map"):
            key = super().__getattribute__("attribute_map")[key]
        super().__setattr__(key, value)

    def __getattribute__(self, key):
        if key != "attribute_map" and key in super().__getattribute__("attribute_map"):
            key = super().__getattribute__("attribute_map")[key]
        return super().__getattribute__(key)

    def __init__(self, **kwargs):
        defaults = dict(
            return_dict=True, output_hidden_states=False, output_attentions=False, torchscript=False,
            torch_dtype=None, use_bfloat16=False, tie_word_embeddings=True, is_encoder_decoder=False,
            is_decoder=False, add_cross_attention=False, pruned_heads={}, chunk_size_feed_forward=0,
            problem_type=None, bos_token_id=None, pad_token_id=None, eos_token_id=None,
            decoder_start_token_id=None, num_labels=2,
        )
        self._attn_implementation = kwargs.pop("attn_implementation", "eager")
        for key, value in defaults.items():
            setattr(self, key, kwargs.pop(key, value))
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def use_return_dict(self):
        return self.return_dict and not self.torchscript


ALLOWED_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention", "linear_attention")


def layer_type_validation(layer_types):
    """transformers' check of a config's layer_types (Qwen3Config calls it): it only raises on an unknown name."""
    if not all(layer_type in ALLOWED_LAYER_TYPES for layer_type in layer_types):
        raise ValueError(f"The `layer_types` entries must be in {ALLOWED_LAYER_TYPES}")

"""Named placeholder: GenerationMixin (text generation) is a base class of T5ForConditionalGeneration only."""


class GenerationMixin:
    pass

"""Named placeholders: the ONNX export configs declared next to T5Config / CLIPConfig."""


class OnnxConfig:
    pass


class OnnxConfigWithPast(OnnxConfig):
    pass


class OnnxSeq2SeqConfigWithPast(OnnxConfigWithPast):
    pass

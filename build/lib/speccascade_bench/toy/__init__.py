"""The offline default: a generated translation task and a small T5 pair trained on it."""

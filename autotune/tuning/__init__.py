"""The decisions, as pure logic over measured figures: the batch search, the batch to train with, the
noise rule, the memory model, the worker study and the feed model. Tested with fakes."""

"""The melody model: the attention encoder/decoder LSTM with its teacher-forced training pass
(`network`), its step-by-step sampler (`stepping`), and the request layer that batches variations,
draws candidates and chooses among them (`sampling`). The only room that imports torch at run time."""

"""Training: the text and its split (data), a GRU trained with AdamW and a cosine schedule, the best model kept by
validation loss (train), the bigram baseline trained as in "Let's build GPT" (train_bigram), and the validation
loss over consecutive windows (evaluate)."""

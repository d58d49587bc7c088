"""`scb finetune`: train or fine-tune a model on a task's training split (settings, config, train)."""

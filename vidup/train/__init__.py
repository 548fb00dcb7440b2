"""`vidup train-lora`: a domain LoRA for the FLUX engine from a broadcaster's own stills and clips."""

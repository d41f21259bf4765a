"""One router per resource: health, metrics, runs, data (images, prompts, datasets), viewer."""

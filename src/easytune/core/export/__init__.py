"""From prompts to files: prompt parsing, generation from prompts, BVH / joints / feature export, and skeleton rendering (GIF, MP4, frame strips)."""

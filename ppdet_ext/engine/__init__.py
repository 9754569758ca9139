"""Training/eval/infer/export API that the thin CLIs in tools/ call."""

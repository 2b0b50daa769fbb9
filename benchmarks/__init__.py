"""Speed and quality benchmarks behind README's tables (run each as `python -m benchmarks.<name>`)."""

"""graphmerge's examples, installed beside the library as `graphmerge_examples`.

Not part of the graphmerge library (which never imports it): the data sets, training loop and
method table behind `graphmerge demo` and the benchmarks.

- `tasks`: disjoint-class tasks on sklearn's digits, the shared class-vector head, training and
  evaluation;
- `compare`: one pair of models trained, merged with each method and scored (`COMPARED`);
- `demo`: `graphmerge demo`;
- `tiny_cnn`: the model factories of the README's CLI examples and `merge_tiny_cnn.yaml`.
"""

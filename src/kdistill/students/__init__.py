"""Every kind of student: built from the teacher's layers (and narrowed by weight selection) or from a smaller config
(`build`, whose `build_student` picks one from a `StudentConfig`), BiLSTM/CNN students on word vectors (`rnn`),
MobileBERT-style bottleneck students (`mobilebert`), and AdaBERT's searched cells (`adabert`, found by `search`).

Nothing is imported here: `kdistill.models` registers the rnn and adabert classes with the Auto* factories while it
is itself being imported, and `build` imports `kdistill.models`.
"""

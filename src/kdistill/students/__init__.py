"""Every kind of student: built from the teacher's layers (and narrowed by weight selection) or from a smaller config
(`build`, whose `build_student` picks one from a `StudentConfig`), BiLSTM/CNN students on word vectors (`rnn`),
MobileBERT-style bottleneck students (`mobilebert`), and AdaBERT's searched cells (`adabert`, found by `search`).

Importing this package registers kdistill's own student classes (`rnn`'s BiLSTM/CNN, `adabert`'s cells) with the
Auto* factories, so that their saved folders load with `AutoModelForSequenceClassification` and `pipeline` after
`import kdistill.students` (`kdistill.models` imports it too).
"""

import kdistill.students.adabert  # noqa: F401  (registers the AdaBERT classes)
import kdistill.students.rnn  # noqa: F401  (registers the BiLSTM/CNN classes)

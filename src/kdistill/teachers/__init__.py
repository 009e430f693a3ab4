"""Every kind of teacher signal, in one place.

The distiller asks a `TeacherSource` (`signals(batch) -> Features`) for the teacher's outputs on each training
batch and does not care where they come from. `choose_teacher_source` picks the kind a run's config asks for:

- live (`TeacherPlan.live`): the teacher model itself, run by the distiller on each batch (eval mode, no_grad,
  under the run's autocast and on its device, which is why it is not a source object);
- cached (`cached.CachedTeacher`): the teacher's outputs read from the fingerprinted cache `kdistill.cache` builds;
- stored answers (`answers.StoredAnswers`): probabilities or logits from a file `kdistill label` wrote;
- several teachers (`multi.MultiTeacher`): live teachers whose class probabilities are averaged;
- other tokenizer (`other_tokenizer.OtherTokenizerTeacher`): for a student with its own vocabulary, the teacher
  reads each example's text through its own tokenizer and gives per-example outputs (logits, and hidden states on
  its own tokens with its own mask, which the per-example losses pool);
  cached, the same outputs come from a cache built on the teacher's tokenization (`CachedTeacher(per_example)`).
"""

from kdistill.teachers.answers import StoredAnswers
from kdistill.teachers.cached import CachedTeacher, cached_teacher, open_cache
from kdistill.teachers.choose import TeacherPlan, choose_teacher_source, finished_run
from kdistill.teachers.multi import MultiTeacher
from kdistill.teachers.other_tokenizer import OtherTokenizerTeacher, per_example
from kdistill.teachers.source import TeacherSource

__all__ = ["TeacherSource", "TeacherPlan", "choose_teacher_source", "finished_run", "CachedTeacher", "cached_teacher",
           "open_cache", "StoredAnswers", "MultiTeacher", "OtherTokenizerTeacher", "per_example"]

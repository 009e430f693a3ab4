"""The distillation itself: what a forward pass exposes (`features`), which teacher layer teaches which student layer
(`mapping`), which layers are active or frozen when (`schedules`, `freezing`), the loss registry (`losses`, with
`relations` and `pooled_losses`), the weighted objective with its projections (`objective`), the one training loop
(`distiller`) and the same objective inside `transformers.Trainer` (`kdtrainer`)."""

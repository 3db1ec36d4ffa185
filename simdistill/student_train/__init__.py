"""The student stage (student wing): the camera-only student trained from the store, an online teacher or GT only
(`trainer`), its target sources (`target_sources`), the distillation step and losses (`distill_step`, `losses`)."""

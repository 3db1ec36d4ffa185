"""The export stage (teacher wing): the frozen teacher (`simdistill.teacher`) run once over the dataset into a
feature store (`export`, one Dask task per shard in `task`), and what a stored view shows (`stored_view`, `view_png`)."""

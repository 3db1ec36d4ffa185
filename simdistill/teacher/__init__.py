"""The teacher wing's model code: training the LiDAR-camera teacher (`trainer`), loading it frozen for export or an
online-teacher run (`loader`), and its outputs as the per-view arrays a store keeps (`view_arrays`). The stage that
runs it over the dataset is `teacher_export`; the student's side is `student_train`."""

"""The scenarios shipped with stress, one module per scenario family (installed as
``stress_scenarios``). Each comes from the chapter on processes and threads and pairs unsafe
strategies with safe ones, so that they can be compared side by side."""

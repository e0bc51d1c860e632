mod rescan;

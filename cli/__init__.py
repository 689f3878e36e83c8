"""Click entry points `ikem-data` and `ikem-train`: wiring only, the logic lives in the packages."""

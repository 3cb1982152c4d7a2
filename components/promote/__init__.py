"""The promote stage: stage (main). Makes the registry's champion follow the export in the workspace."""

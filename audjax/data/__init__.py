"""Data: ADLD list files, face alignment, landmark annotation, dataset preparation."""

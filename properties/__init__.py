# Default yaml of recbole_diffusion; installed as the package recbole_diffusion.properties.

"""File jobs: a segment plan at the cuts, segments encoded to files in a resumable job folder (in this process
or on Ray), and assembly without re-encoding. `vidup.upscale_video` runs every file through here."""

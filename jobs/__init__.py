"""What a download is: the HTTP engine, the track and album jobs, and the queue API."""

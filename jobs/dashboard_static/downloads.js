/* The Downloads page (jobs/downloads_page.py): jobs and albums from the HTTP API, polled every
   second, drawn in place (rows are kept and updated, so buttons and open albums survive a
   refresh). Safety: every value from the API (URLs, folders, names, errors) is attacker-
   controlled, so it goes into the page only as textContent or an attribute value, never as
   markup; no inline script or style, no eval (the dashboard's Content-Security-Policy). */
(function () {
    "use strict";

    var config = document.body.dataset;
    var api = config.api;
    var pollMs = parseInt(config.pollMs, 10) || 2000;
    var RUNNING = "processing";
    var ENDED = { completed: true, failed: true, partial: true };
    var CONFIRM_MS = 4000;

    var table = document.getElementById("downloads");
    var sections = {};
    ["running", "queued", "finished"].forEach(function (name) {
        sections[name] = table.querySelector("tbody[data-section=" + name + "]");
    });
    var rows = {}; // id -> <tr>, kept across refreshes
    var expanded = {}; // album id -> true while its tracks are shown
    var lastJobs = [];

    // --- text helpers ------------------------------------------------------------------------
    function text(value) {
        return value === null || value === undefined ? "" : String(value);
    }

    function el(tag, className, content) {
        var node = document.createElement(tag);
        if (className) {
            node.className = className;
        }
        if (content !== undefined) {
            node.textContent = text(content);
        }
        return node;
    }

    function setText(node, value) {
        var shown = text(value);
        if (node.textContent !== shown) {
            node.textContent = shown;
        }
    }

    function humanBytes(count) {
        if (count === null || count === undefined) {
            return "?";
        }
        var value = Number(count);
        var units = ["B", "KiB", "MiB", "GiB"];
        for (var i = 0; i < units.length; i += 1) {
            if (Math.abs(value) < 999.5 || i === units.length - 1) {
                return i === 0 || Math.abs(value) >= 99.95
                    ? value.toFixed(0) + " " + units[i]
                    : value.toFixed(1) + " " + units[i];
            }
            value /= 1024;
        }
        return "?";
    }

    function duration(seconds) {
        if (!isFinite(seconds) || seconds < 0) {
            return "--:--";
        }
        var s = Math.round(seconds);
        var h = Math.floor(s / 3600);
        var m = Math.floor((s % 3600) / 60);
        var pad = function (n) {
            return (n < 10 ? "0" : "") + n;
        };
        return (h ? h + ":" + pad(m) : pad(m)) + ":" + pad(s % 60);
    }

    function epochMs(iso) {
        var when = iso ? Date.parse(iso) : NaN;
        return isNaN(when) ? null : when;
    }

    function when(iso) {
        var ms = epochMs(iso);
        return ms === null ? "" : new Date(ms).toLocaleString();
    }

    function decode(part) {
        try {
            return decodeURIComponent(part);
        } catch (error) {
            return part;
        }
    }

    // A URL as people read it: percent-escapes decoded, no user:password@.
    function decodedUrl(url) {
        var raw = text(url);
        var match = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/i.exec(raw);
        if (!match) {
            return decode(raw);
        }
        var host = match[2].slice(match[2].lastIndexOf("@") + 1);
        return match[1] + host + decode(match[3]);
    }

    // What to call a track: its saved file, else the last part of its URL's path, decoded.
    function fileName(view) {
        if (view.file) {
            return text(view.file);
        }
        var raw = text(view.url).replace(/[?#].*$/, "").replace(/\/+$/, "");
        var match = /^[a-z][a-z0-9+.-]*:\/\/[^/]*(\/.*)?$/i.exec(raw);
        var path = match ? match[1] || "" : raw;
        var last = decode(path.slice(path.lastIndexOf("/") + 1));
        return last || decodedUrl(view.url);
    }

    function titleOf(view) {
        if (view.kind === "album") {
            return text(view.name || view.dest || view.id);
        }
        return fileName(view);
    }

    // `retry 2/4 in 1s: HTTP 503 Service Unavailable`, as `bin/jobs` prints it.
    function retryText(view) {
        var attempts = view.attempts;
        if (view.state !== "queued" || typeof attempts !== "number" || attempts < 1 || !view.max_attempts) {
            return "";
        }
        var shown = "retry " + (attempts + 1) + "/" + view.max_attempts;
        var due = epochMs(view.next_attempt_at);
        if (due !== null) {
            shown += " in " + Math.max(0, Math.ceil((due - Date.now()) / 1000)) + "s";
        }
        return shown + (view.last_error ? ": " + text(view.last_error) : "");
    }

    function progressOf(view) {
        var progress = view.progress || {};
        var done = Number(progress.bytes_done) || 0;
        var total = progress.bytes_total === null || progress.bytes_total === undefined ? null : Number(progress.bytes_total);
        var rate = Number(progress.rate) || 0;
        var parts = [];
        var percent = total ? Math.min(100, Math.floor((done / total) * 100)) : null;
        if (view.state === RUNNING || done > 0) {
            var whole = total && (done === total || view.state === "completed");
            parts.push(total && !whole ? humanBytes(done) + " / " + humanBytes(total) : humanBytes(total || done));
        }
        if (view.state === RUNNING && rate > 0) {
            parts.push(humanBytes(rate) + "/s");
            if (total) {
                parts.push("ETA " + duration((total - done) / rate));
            }
        }
        if (view.kind === "album" && view.tracks) {
            parts.push(view.tracks.completed + "/" + view.tracks.total + " tracks");
        }
        return { done: done, total: total, percent: percent, rate: rate, label: parts.join(" · ") };
    }

    function sectionOf(view) {
        if (view.state === RUNNING) {
            return "running";
        }
        return ENDED[view.state] ? "finished" : "queued";
    }

    // --- rows ----------------------------------------------------------------------------------
    function button(label, role, className) {
        var node = el("button", "btn btn-sm " + className, label);
        node.type = "button";
        node.setAttribute("data-role", role);
        return node;
    }

    function makeRow(view, isTrack) {
        var row = el("tr", isTrack ? "dl-row dl-track" : "dl-row");
        row.setAttribute("data-role", isTrack ? "track" : "download");
        row.setAttribute("data-id", text(view.id));
        var parts = {};
        var name = el("td", "dl-name");
        parts.toggle = button("", "toggle", "btn-link dl-toggle");
        parts.toggle.hidden = true;
        parts.title = el("span", "dl-title");
        parts.detail = el("div", "dl-detail");
        name.appendChild(parts.toggle);
        name.appendChild(parts.title);
        name.appendChild(parts.detail);

        var state = el("td", "dl-state");
        parts.state = el("span", "dl-badge");
        parts.note = el("div", "dl-note");
        state.appendChild(parts.state);
        state.appendChild(parts.note);

        var progressCell = el("td", "dl-progress");
        parts.bar = el("progress", "dl-bar");
        parts.bar.max = 100;
        parts.percent = el("span", "dl-percent");
        parts.progress = el("div", "dl-progress-text");
        progressCell.appendChild(parts.bar);
        progressCell.appendChild(parts.percent);
        progressCell.appendChild(parts.progress);

        parts.when = el("td", "dl-when");
        var actions = el("td", "dl-actions");
        parts.retry = button("Retry", "retry", "btn-outline-primary");
        parts.remove = button("Delete", "delete", "btn-outline-danger");
        actions.appendChild(parts.retry);
        actions.appendChild(parts.remove);
        [name, state, progressCell, parts.when, actions].forEach(function (cell) {
            row.appendChild(cell);
        });
        parts.toggle.addEventListener("click", function () {
            var id = row.getAttribute("data-id");
            expanded[id] = !expanded[id];
            render(lastJobs);
        });
        parts.retry.addEventListener("click", function () {
            act(parts.retry, "PATCH", row.getAttribute("data-id"), { action: "retry" });
        });
        parts.remove.addEventListener("click", function () {
            // Two clicks: the first asks, the second (within a few seconds) deletes.
            if (!parts.remove.classList.contains("dl-confirm")) {
                parts.remove.classList.add("dl-confirm");
                parts.remove.textContent = "Really delete?";
                setTimeout(function () {
                    parts.remove.classList.remove("dl-confirm");
                    parts.remove.textContent = "Delete";
                }, CONFIRM_MS);
                return;
            }
            act(parts.remove, "DELETE", row.getAttribute("data-id"), null);
        });
        row.dlParts = parts;
        return row;
    }

    function fill(row, view, tracksShown) {
        var parts = row.dlParts;
        row.setAttribute("data-state", text(view.state));
        row.setAttribute("data-kind", text(view.kind));
        setText(parts.title, titleOf(view));
        var detail = [];
        if (view.kind === "album" && view.name && view.dest && view.dest !== view.name) {
            detail.push("in " + text(view.dest));
        } else if (view.kind !== "album" && view.dest) {
            detail.push("in " + text(view.dest));
        }
        if (view.url) {
            detail.push(decodedUrl(view.url));
        }
        setText(parts.detail, detail.join(" · "));
        parts.detail.title = decodedUrl(view.url);

        if (view.kind === "album") {
            var count = (view.track_ids || []).length;
            parts.toggle.hidden = count === 0;
            parts.toggle.setAttribute("aria-expanded", tracksShown ? "true" : "false");
            setText(parts.toggle, (tracksShown ? "▾ " : "▸ ") + count + (count === 1 ? " track" : " tracks"));
        }

        setText(parts.state, view.state);
        parts.state.className = "dl-badge dl-state-" + text(view.state).replace(/[^a-z]/g, "");
        var note = view.state === "queued" ? retryText(view) : text(view.error);
        if (view.state !== "queued" && !view.error && view.kind === "album" && view.failed_tracks && view.failed_tracks.length) {
            note = view.failed_tracks.length + " track(s) failed";
        }
        setText(parts.note, note);
        parts.note.className = view.error ? "dl-note dl-bad" : "dl-note";

        var progress = progressOf(view);
        var showBar = view.state === RUNNING || (view.kind === "album" && progress.total);
        parts.bar.hidden = !showBar;
        parts.percent.hidden = !showBar;
        if (showBar) {
            if (progress.percent === null) {
                parts.bar.removeAttribute("value"); // indeterminate: the size is not known yet
                setText(parts.percent, "");
            } else {
                parts.bar.value = progress.percent;
                setText(parts.percent, progress.percent + " %");
            }
        }
        setText(parts.progress, progress.label);
        row.setAttribute("data-percent", progress.percent === null ? "" : String(progress.percent));
        row.setAttribute("data-rate", String(progress.rate));

        var stamp = view.state === RUNNING ? view.started_at : ENDED[view.state] ? view.ended_at : view.enqueued_at;
        setText(parts.when, when(stamp || view.enqueued_at));
        var canRetry = view.state === "failed" || view.state === "partial";
        parts.retry.hidden = !canRetry;
    }

    function rowFor(view, isTrack) {
        var key = (isTrack ? "track:" : "") + view.id;
        var row = rows[key];
        if (!row) {
            row = makeRow(view, isTrack);
            rows[key] = row;
        }
        return row;
    }

    function newestFirst(a, b) {
        return text(b.ended_at || b.enqueued_at).localeCompare(text(a.ended_at || a.enqueued_at));
    }

    function oldestFirst(field) {
        return function (a, b) {
            return text(a[field] || a.enqueued_at).localeCompare(text(b[field] || b.enqueued_at));
        };
    }

    // Put `wanted` rows into `body` after its heading row, in order, moving only what moved.
    function place(body, wanted) {
        var heading = body.firstElementChild;
        var cursor = heading.nextElementSibling;
        wanted.forEach(function (row) {
            if (row !== cursor) {
                body.insertBefore(row, cursor);
            } else {
                cursor = cursor.nextElementSibling;
            }
        });
        while (cursor) {
            var next = cursor.nextElementSibling;
            body.removeChild(cursor);
            cursor = next;
        }
    }

    function render(jobs) {
        lastJobs = jobs;
        var byId = {};
        jobs.forEach(function (view) {
            byId[view.id] = view;
        });
        var top = jobs.filter(function (view) {
            var parent = view.album_id ? byId[view.album_id] : null;
            return !(parent && parent.kind === "album");
        });
        var grouped = { running: [], queued: [], finished: [] };
        top.forEach(function (view) {
            grouped[sectionOf(view)].push(view);
        });
        grouped.running.sort(oldestFirst("started_at"));
        grouped.queued.sort(oldestFirst("enqueued_at"));
        grouped.finished.sort(newestFirst);

        var used = {};
        Object.keys(grouped).forEach(function (name) {
            var wanted = [];
            grouped[name].forEach(function (view) {
                var shown = view.kind === "album" && !!expanded[view.id];
                var row = rowFor(view, false);
                fill(row, view, shown);
                used[view.id] = true;
                wanted.push(row);
                if (shown) {
                    (view.track_ids || []).forEach(function (trackId) {
                        var track = byId[trackId];
                        if (track) {
                            var trackRow = rowFor(track, true);
                            fill(trackRow, track, false);
                            used["track:" + trackId] = true;
                            wanted.push(trackRow);
                        }
                    });
                }
            });
            place(sections[name], wanted);
            sections[name].firstElementChild.firstElementChild.textContent =
                { running: "Running", queued: "Queued", finished: "Finished" }[name] + " (" + grouped[name].length + ")";
        });
        Object.keys(rows).forEach(function (key) {
            if (!used[key]) {
                delete rows[key];
            }
        });
        setText(
            document.getElementById("dl-summary"),
            grouped.running.length + " running, " + grouped.queued.length + " queued, " + grouped.finished.length + " finished"
        );
        document.getElementById("dl-loading").hidden = true;
    }

    // --- talking to the API --------------------------------------------------------------------
    function request(method, url, body) {
        var options = { method: method, credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } };
        if (body !== null && body !== undefined) {
            options.headers["Content-Type"] = "application/json";
            options.body = JSON.stringify(body);
        }
        return fetch(url, options).then(function (response) {
            return response.text().then(function (raw) {
                var answer = null;
                try {
                    answer = raw ? JSON.parse(raw) : null;
                } catch (error) {
                    answer = null;
                }
                if (!response.ok || !answer || answer.success === false) {
                    var message = answer && answer.error ? text(answer.error) : "HTTP " + response.status + " " + response.statusText;
                    var failure = new Error(message);
                    failure.field = answer && answer.field ? text(answer.field) : "";
                    failure.status = response.status;
                    failure.retryAfter = parseInt(response.headers.get("Retry-After"), 10) || 0;
                    throw failure;
                }
                return answer;
            });
        });
    }

    function say(node, message, bad) {
        node.hidden = !message;
        node.textContent = text(message);
        node.classList.toggle("dl-bad", !!bad);
        node.classList.toggle("dl-good", !bad);
    }

    var pollError = document.getElementById("dl-poll-error");
    var formMessage = document.getElementById("dl-message");

    var backoffMs = 0; // after a 429: what its Retry-After asked for

    function refresh() {
        return request("GET", api, null).then(
            function (answer) {
                say(pollError, "", true);
                render(Array.isArray(answer.jobs) ? answer.jobs : []);
            },
            function (error) {
                backoffMs = error.status === 429 ? Math.max(1, error.retryAfter) * 1000 : 0;
                say(pollError, "Could not refresh the list: " + error.message, true);
            }
        );
    }

    function loop() {
        refresh().then(function () {
            var wait = Math.max(pollMs, backoffMs);
            backoffMs = 0;
            setTimeout(loop, wait);
        });
    }

    function act(control, method, id, body) {
        control.disabled = true;
        request(method, api + "/" + encodeURIComponent(id), body)
            .then(
                function (answer) {
                    say(formMessage, text(id) + ": " + text(answer.result || (body && body.action) || "done"), false);
                },
                function (error) {
                    say(formMessage, text(id) + ": " + error.message, true);
                }
            )
            .then(function () {
                control.disabled = false;
                return refresh();
            });
    }

    // --- the form ------------------------------------------------------------------------------
    var form = document.getElementById("dl-form");

    function mode() {
        return form.querySelector("input[name=mode]:checked").value;
    }

    function showFields() {
        var current = mode();
        form.querySelectorAll("[data-modes]").forEach(function (group) {
            group.hidden = group.getAttribute("data-modes").split(" ").indexOf(current) < 0;
        });
    }

    function lines(value) {
        return value
            .split(/\r?\n/)
            .map(function (line) {
                return line.trim();
            })
            .filter(function (line) {
                return line !== "";
            });
    }

    function requestBody() {
        var current = mode();
        var body = {};
        var dest = form.elements.dest.value.trim();
        if (dest) {
            body.dest = dest;
        }
        if (form.elements.force.checked) {
            body.force = true;
        }
        var album = form.elements.album.value.trim();
        if (current === "playlist") {
            body.playlist = form.elements.playlist.value.trim();
            if (album) {
                body.album = album; // else the playlist's own name
            }
            return body;
        }
        var urls = lines(form.elements.urls.value);
        if (current === "album") {
            body.album = album;
            body.urls = urls;
        } else if (urls.length === 1) {
            body.url = urls[0];
        } else {
            body.urls = urls;
        }
        return body;
    }

    form.querySelectorAll("input[name=mode]").forEach(function (radio) {
        radio.addEventListener("change", showFields);
    });
    form.addEventListener("submit", function (event) {
        event.preventDefault();
        var add = document.getElementById("dl-add");
        form.querySelectorAll(".is-invalid").forEach(function (field) {
            field.classList.remove("is-invalid");
        });
        add.disabled = true;
        request("POST", api, requestBody())
            .then(
                function (answer) {
                    var ids = Array.isArray(answer.jobIds) ? answer.jobIds : [];
                    var message = "Added " + (ids.length || 1) + (ids.length > 1 ? " downloads" : " download");
                    say(formMessage, message + (answer.warning ? " (" + text(answer.warning) + ")" : ""), false);
                    form.elements.urls.value = "";
                    form.elements.playlist.value = "";
                },
                function (error) {
                    say(formMessage, error.message, true);
                    var name = { url: "urls", name: "urls" }[error.field] || error.field.replace(/[^a-z_]/gi, "");
                    var field = name ? form.querySelector("[name='" + name + "']") : null;
                    if (field) {
                        field.classList.add("is-invalid");
                    }
                }
            )
            .then(function () {
                add.disabled = false;
                return refresh();
            });
    });

    showFields();
    loop();
})();

/* The dashboard's pages, in place of rq-dashboard 0.9.0's inline scripts and underscore
   templates (served by jobs/dashboard.py). The same pages, JSON, buttons and polling; two
   differences, both for safety:
   - this is a static file: what a page needs (its job id, queue, ...) comes from data-
     attributes on <body>, so the Content-Security-Policy can forbid inline script and eval
     (underscore compiles its templates with `new Function`);
   - every value from Redis (descriptions, errors, call strings, names) goes into the page as a
     text node or an attribute value, never as markup: 0.9.0 pasted several of them in as HTML,
     so a job or a worker could run script here. */
(function ($) {
    "use strict";

    var config = document.body.dataset;
    var root = config.root; // the blueprint's prefix ("/"): delete and requeue live there
    var base = root + config.instance; // pages and JSON: "/0/..."
    var pollInterval = parseInt(config.pollInterval, 10) || 2500;
    var autorefresh = true;

    // --- building the page from data: text only ---------------------------------------------
    function text(value) {
        return value === null || value === undefined ? "" : String(value);
    }

    function el(tag, attributes, children) {
        var node = document.createElement(tag);
        $.each(attributes || {}, function (name, value) {
            node.setAttribute(name, text(value));
        });
        (children || []).forEach(function (child) {
            node.appendChild(child instanceof Node ? child : document.createTextNode(text(child)));
        });
        return node;
    }

    // Only paths on this server become links: no value from Redis can become a javascript: URL.
    function link(href, label, attributes) {
        var safe = /^\/(?!\/)/.test(text(href)) ? text(href) : "#";
        return el("a", $.extend({}, attributes, { href: safe }), [label]);
    }

    function enc(value) {
        return encodeURIComponent(text(value));
    }

    function jobView(id) {
        return base + "/view/job/" + enc(id);
    }

    // Dates as 0.9.0 showed them (Sugar).
    function utc(value) {
        return Date.create(value).rewind({ minutes: new Date().getTimezoneOffset() });
    }

    function relative(value) {
        return value ? utc(value).relative() : "-";
    }

    function relativeAndShort(value) {
        return value ? relative(value) + " / " + utc(value).format() : "-";
    }

    // Fetch `url` now and then every poll interval while Autorefresh is on; `render` draws it.
    // Returns the one-off fetch, for buttons that want the page redrawn at once.
    function poll(url, render) {
        function load() {
            return $.getJSON(url).then(render);
        }
        function round() {
            (autorefresh ? load() : $.when()).always(function () {
                setTimeout(round, pollInterval);
            });
        }
        round();
        return load;
    }

    function fill($tbody, rows, columns, emptyText) {
        $tbody.empty();
        $tbody.append(rows.length ? rows : [el("tr", {}, [el("td", { colspan: columns }, [emptyText])])]);
    }

    function confirmThen(action, done) {
        var $modal = $("#confirmation-modal");
        $("#confirmation-modal-action").text(action);
        $("#confirmation-modal-yes").off("click").on("click", function () {
            done();
            $modal.modal("hide");
        });
        $("#confirmation-modal-no").off("click").on("click", function () {
            $modal.modal("hide");
        });
        $modal.modal("show");
    }

    function field(label, content) {
        return el("p", {}, [el("strong", {}, [label]), ":", el("br"), content]);
    }

    // --- queues -------------------------------------------------------------------------------
    var QUEUE_COLUMNS = [
        ["queued_url", "count", "narrow"],
        ["deferred_url", "deferred_job_registry_count", "narrow"],
        ["scheduled_url", "scheduled_job_registry_count", "narrow"],
        ["started_url", "started_job_registry_count", "narrow"],
        ["finished_url", "finished_job_registry_count", "narrow"],
        ["failed_url", "failed_job_registry_count", "failed"],
        ["canceled_url", "canceled_job_registry_count", "failed"],
    ];

    function queueRow(queue) {
        var cells = [el("td", {}, [queue.name])];
        QUEUE_COLUMNS.forEach(function (column) {
            cells.push(el("td", { class: column[2] }, [link(queue[column[0]], queue[column[1]])]));
        });
        return el("tr", { "data-role": "queue" }, cells);
    }

    function queuesPage() {
        var $tbody = $("table#queues tbody");
        poll(base + "/data/queues.json", function (data) {
            fill($tbody, data.queues.map(queueRow), 8, "No queues.");
        });
    }

    // --- workers ------------------------------------------------------------------------------
    function workerRow(worker) {
        var versions = worker.version && worker.python_version;
        var name = el("td", versions ? { title: "RQ " + worker.version + " / Python " + worker.python_version } : {}, [
            worker.name,
        ]);
        var job = worker.current_job;
        var current;
        if (job !== null && typeof job === "object") {
            var title = ["Job ID: " + text(job.job_id), "Description: " + text(job.description)];
            title.push("Created at: " + relative(job.created_at));
            current = el("td", { title: title.join("\r\n") }, [link(jobView(job.job_id), job.call_string)]);
        } else {
            current = el("td", {}, [job]);
        }
        return el("tr", { "data-role": "worker" }, [name, current, el("td", {}, [(worker.queues || []).join(", ")])]);
    }

    function workersPage() {
        var $tbody = $("table#workers tbody");
        poll(base + "/data/workers.json", function (data) {
            fill($tbody, data.workers.map(workerRow), 3, "No workers.");
        });
    }

    // --- job lists ----------------------------------------------------------------------------
    function jobRow(job, canDelete) {
        var about = [
            el("span", { class: "description ellipsify", title: text(job.description) }, [job.description]),
            el("div", { class: "job_id" }, [link(jobView(job.id), job.id)]),
        ];
        var actions = [];
        if (job.exc_info) {
            about.push(el("span", { class: "end_date" }, ["Failed " + relative(job.ended_at)]));
            about.push(el("pre", { class: "exc_info" }, [job.exc_info]));
            actions.push(
                el("a", { href: "#", "data-role": "requeue-job-btn", class: "btn btn-outline-warning btn-sm btn-block" }, [
                    "Requeue",
                ])
            );
        }
        if (canDelete) {
            actions.push(el("a", { href: "#", "data-role": "delete-job-btn", class: "btn btn-outline-danger btn-sm" }, ["Delete"]));
        }
        return el("tr", { "data-role": "job", "data-job-id": job.id }, [
            el("td", {}, about),
            el("td", {}, [el("span", { class: "creation_date" }, [relative(job.created_at)])]),
            el("td", { class: "actions narrow" }, actions),
        ]);
    }

    function pageItem(url, label, disabled, active) {
        var classes = "page-item" + (disabled ? " disabled" : "") + (active ? " active" : "");
        return el("li", { class: classes }, [link(url, label, { class: "page-link" })]);
    }

    function pageLinks(pages) {
        var none = pages.num_pages === 0;
        var current = pages.current_page;
        var items = [pageItem(pages.first_page.url, "\u00ab", current === 1 || none)];
        items.push(pages.prev_page && !none ? pageItem(pages.prev_page.url, "\u2039") : pageItem("#", "\u2039", true));
        pages.pages_in_window.forEach(function (page) {
            items.push(pageItem(page.url, page.number, false, page.number === current));
        });
        items.push(pages.next_page ? pageItem(pages.next_page.url, "\u203a") : pageItem("#", "\u203a", true));
        items.push(pageItem(pages.last_page.url, "\u00bb", current === pages.num_pages || none));
        return items;
    }

    function jobsPage() {
        var $tbody = $("table#jobs tbody");
        var canDelete = config.enableDelete === "yes";
        var where = [config.queue, config.registry, config.perPage, config.order, config.pageNumber];
        var reload = poll(base + "/data/jobs/" + where.map(enc).join("/") + ".json", function (data) {
            fill($tbody, data.jobs.map(function (job) { return jobRow(job, canDelete); }), 3, "No jobs.");
            $("div#page-selection ul").empty().append(pageLinks(data.pagination));
        });

        function confirmedPost(selector, action, after) {
            $(selector).on("click", function (event) {
                event.preventDefault();
                var href = this.getAttribute("href");
                confirmThen(action, function () {
                    $.post(href).done(after || function () {});
                });
            });
        }
        confirmedPost("#empty-btn", "empty", reload);
        confirmedPost("#compact-btn", "compact");
        confirmedPost("#requeue-all-btn", "requeue all");

        function removeRow($row) {
            $row.fadeOut("fast", function () {
                $row.remove();
            });
        }
        $tbody.on("click", "[data-role=delete-job-btn]", function (event) {
            event.preventDefault();
            var $row = $(this).closest("tr");
            confirmThen("delete job", function () {
                $.post(root + "job/" + enc($row.attr("data-job-id")) + "/delete").done(function () {
                    removeRow($row);
                });
            });
        });
        $tbody.on("click", "[data-role=requeue-job-btn]", function (event) {
            event.preventDefault();
            var $row = $(this).closest("tr");
            $.post(root + "job/" + enc($row.attr("data-job-id")) + "/requeue").done(function () {
                removeRow($row);
            });
        });

        var $queue = $("#select-queue");
        $queue.on("click", function () {
            $queue.val("");
        });
        $queue.on("mouseleave", function () {
            if (!$queue.val()) {
                $queue.val(config.queue);
            }
        });
        $("#select-queue, #select-registry, #select-sort-order, #select-per-page").on("change", function () {
            var choice = [$queue.val() || config.queue, $("#select-registry").val()];
            choice.push($("#select-per-page").val(), $("#select-sort-order").val(), 1);
            window.location.href = base + "/view/jobs/" + choice.map(enc).join("/");
        });
    }

    // --- one job ------------------------------------------------------------------------------
    function jobInfo(job) {
        var dependencies = (job.depends_on || []).map(function (id, i) {
            var active = (job.depends_on_status || [])[i] === "active";
            return el("li", {}, active ? [link(jobView(id), id)] : [id + " (Expired)"]);
        });
        var dates = [
            ["Created at", job.created_at],
            ["Enqueued at", job.enqueued_at],
            ["Started at", job.started_at],
            ["Ended at", job.ended_at],
        ];
        return [
            el("span", { class: "col-6" }, [
                field("Description", el("div", { class: "description-scroll" }, [job.description])),
                field("Origin queue", job.origin),
                field("Status", job.status),
                field("Result", el("pre", {}, [JSON.stringify(job.result, null, 2)])),
                field("Metadata", job.metadata),
                el("p", {}, [el("strong", {}, ["Depends on"]), ":"]),
                el("ul", {}, dependencies),
            ]),
            el("span", { class: "col-6" }, dates.map(function (pair) {
                return field(pair[0], relativeAndShort(pair[1]));
            })),
            el("span", { class: "row col-12" }, [
                el("p", {}, [el("strong", {}, ["Exception Info"]), ":"]),
                el("pre", { class: "exc_info col-12" }, [job.exc_info]),
            ]),
        ];
    }

    function jobPage() {
        var id = config.jobId;
        var $data = $("#job-data");
        poll(base + "/data/job/" + enc(id) + ".json", function (job) {
            $data.empty().append(jobInfo(job));
            if (job.status === "failed") {
                $("#requeue-job-btn").removeClass("d-none");
            }
        });
        $("#delete-job-btn").on("click", function (event) {
            event.preventDefault();
            confirmThen("delete job", function () {
                $.post(root + "job/" + enc(id) + "/delete").done(function () {
                    window.location.href = base + "/view/queues";
                });
            });
        });
        $("#requeue-job-btn").on("click", function (event) {
            event.preventDefault();
            $.post(root + "job/" + enc(id) + "/requeue");
        });
    }

    $("#autorefresh-switch").on("change", function () {
        autorefresh = this.checked;
    });
    var views = { queues: queuesPage, workers: workersPage, jobs: jobsPage, job: jobPage };
    if (views[config.view]) {
        views[config.view]();
    }
})(jQuery);

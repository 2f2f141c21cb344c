// The C++11 API of include/msgflo/msgflo.hpp, on the cxx bridge (src/lib.rs).

#include "msgflo/msgflo.hpp"
#include "rust/cxx.h"
#include "msgflo-cpp/src/lib.rs.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace msgflo {

namespace {

// "[CODE] message" from the bridge -> msgflo::Error(code, message).
Error translate(const rust::Error &e) {
    std::string what = e.what();
    if (what.size() > 2 && what[0] == '[') {
        std::string::size_type end = what.find("] ");
        if (end != std::string::npos) {
            return Error(what.substr(1, end - 1), what.substr(end + 2));
        }
    }
    return Error("ERROR", what);
}

// Call into the bridge, its rust::Error (an error of the core, or a panic
// caught there as INTERNAL) thrown as msgflo::Error.
template <class F>
auto call(F f) -> decltype(f()) {
    try {
        return f();
    } catch (const rust::Error &e) {
        throw translate(e);
    }
}

bool listed(const std::vector<std::string> &ids, const std::string &id) {
    for (std::size_t i = 0; i < ids.size(); ++i)
        if (ids[i] == id) return true;
    return false;
}

rust::Vec<ffi::PortArg> portArgs(const std::vector<Definition::Port> &ports, const Definition &d) {
    rust::Vec<ffi::PortArg> out;
    for (std::size_t i = 0; i < ports.size(); ++i) {
        ffi::PortArg a;
        a.id = ports[i].id;
        a.type_ = ports[i].type;
        a.queue = ports[i].queue;
        a.hidden = listed(d.hiddenPorts, ports[i].id);
        a.persistent = !listed(d.transientPorts, ports[i].id);
        out.push_back(std::move(a));
    }
    return out;
}

ffi::DefinitionArg definitionArg(const Definition &d) {
    ffi::DefinitionArg a;
    a.component = d.component;
    a.label = d.label;
    a.icon = d.icon;
    a.id = d.id;
    a.inports = portArgs(d.inports, d);
    a.outports = portArgs(d.outports, d);
    return a;
}

rust::Str str(const std::string &s) { return rust::Str(s.data(), s.size()); }

class CoreMessage : public Message {
public:
    explicit CoreMessage(rust::Box<ffi::CoreDelivery> d) : d_(std::move(d)) {}
    std::string port() const override {
        return std::string(call([this] { return d_->inport(); }));
    }
    std::string asString() const override {
        rust::Slice<const uint8_t> p = payload();
        return std::string(reinterpret_cast<const char *>(p.data()), p.size());
    }
    void data(const char **data, uint64_t *length) const override {
        rust::Slice<const uint8_t> p = payload();
        *data = reinterpret_cast<const char *>(p.data());
        *length = p.size();
    }
    void ack() override { call([this] { d_->ack(); }); }
    void nack() override { call([this] { d_->nack(); }); }
    bool settled() const override { return call([this] { return d_->settled(); }); }
    const ffi::CoreDelivery &delivery() const { return *d_; }

private:
    rust::Slice<const uint8_t> payload() const {
        return call([this] { return d_->payload(); });
    }

    rust::Box<ffi::CoreDelivery> d_;
};

class ParticipantImpl : public Participant {
public:
    ParticipantImpl(const Definition &def, MessageHandler handler, const EngineConfig &config)
        : core_(connect(def, config)), def_(def), handler_(handler) {
        const ffi::CoreParticipant &core = *core_;
        def_.id = std::string(call([&] { return core.id(); }));
        for (std::size_t i = 0; i < def_.inports.size(); ++i) {
            const std::string &id = def_.inports[i].id;
            def_.inports[i].queue = std::string(call([&] { return core.queue(true, str(id)); }));
        }
        for (std::size_t i = 0; i < def_.outports.size(); ++i) {
            const std::string &id = def_.outports[i].id;
            def_.outports[i].queue = std::string(call([&] { return core.queue(false, str(id)); }));
        }
    }

    void send(const std::string &port, const std::string &payload) override {
        send(port, payload.data(), payload.size());
    }

    void send(const std::string &port, const char *data, uint64_t length) override {
        call([&] {
            core_->send(str(port), rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t *>(data), length));
        });
    }

    void sendJson(const std::string &port, const std::string &json) override {
        call([&] { core_->send_json(str(port), str(json)); });
    }

    void onMessage(MessageHandler handler) override {
        std::lock_guard<std::mutex> lock(mutex_);
        handler_ = handler;
    }

    const Definition &definition() const override { return def_; }
    std::string discovery() const override { return std::string(call([this] { return core_->discovery(); })); }

    void announce() { call([this] { core_->announce(); }); }

    std::string broker() const { return std::string(call([this] { return core_->broker(); })); }

    std::string readinessLine() const { return std::string(call([this] { return core_->readiness_line(); })); }

    // Handle messages until `stopping`. Runs on an Engine-owned thread, so
    // it throws nothing: an error of the bridge (an internal one: a panic
    // caught in the core) is returned, for launch() to throw.
    std::shared_ptr<Error> serve(const std::atomic<bool> &stopping) {
        try {
            while (!stopping.load()) {
                rust::Box<ffi::CoreBatch> batch = call([this] { return core_->recv_batch(64, 200); });
                std::size_t n = call([&] { return batch->len(); });
                for (std::size_t i = 0; i < n; ++i) {
                    CoreMessage msg(call([&] { return batch->take(i); }));
                    if (stopping.load()) continue; // dropped unsettled: requeued
                    handle(msg);
                }
                if (call([this] { return core_->stopped(); })) return nullptr;
            }
            return nullptr;
        } catch (const Error &e) {
            return std::make_shared<Error>(e);
        } catch (const std::exception &e) { // e.g. std::bad_alloc
            return std::make_shared<Error>("INTERNAL", e.what());
        }
    }

    void stop() { call([this] { core_->stop(); }); }

private:
    static rust::Box<ffi::CoreParticipant> connect(const Definition &def, const EngineConfig &config) {
        return call([&] { return ffi::connect(definitionArg(def), str(def.role), str(config.url()), config.prefetch()); });
    }

    void handle(CoreMessage &msg) {
        MessageHandler handler;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            handler = handler_;
        }
        std::string failure;
        try {
            if (!handler) {
                failure = "no handler registered";
            } else {
                handler(&msg);
                return;
            }
        } catch (const std::exception &e) {
            failure = e.what();
        } catch (...) {
            failure = "unknown exception";
        }
        std::fprintf(stderr, "msgflo: %s: handler failed on %s: %s; message nacked\n", def_.role.c_str(),
                     msg.port().c_str(), failure.c_str());
        try {
            // nack + {"error": ...} on an "error" outport: the core's rule.
            core_->fail(msg.delivery(), str(failure));
        } catch (const rust::Error &e) {
            std::fprintf(stderr, "msgflo: %s: %s\n", def_.role.c_str(), e.what());
        }
    }

    rust::Box<ffi::CoreParticipant> core_;
    Definition def_;
    std::mutex mutex_;
    MessageHandler handler_;
};

class EngineImpl : public Engine {
public:
    explicit EngineImpl(const EngineConfig &config) : config_(config), stopping_(false), on_signals_(false) {}

    ~EngineImpl() override {
        stopping_ = true;
    }

    Participant *registerParticipant(const Definition &definition) override {
        return registerParticipant(definition, MessageHandler());
    }

    Participant *registerParticipant(const Definition &definition, MessageHandler handler) override {
        std::unique_ptr<ParticipantImpl> p(new ParticipantImpl(definition, handler, config_));
        std::lock_guard<std::mutex> lock(mutex_);
        participants_.push_back(std::move(p));
        return participants_.back().get();
    }

    void launch() override {
        std::vector<ParticipantImpl *> ps;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (std::size_t i = 0; i < participants_.size(); ++i) ps.push_back(participants_[i].get());
        }
        for (std::size_t i = 0; i < ps.size(); ++i) ps[i]->announce();
        std::vector<std::thread> threads;
        std::mutex failed;
        std::shared_ptr<Error> failure;
        for (std::size_t i = 0; i < ps.size(); ++i) {
            ParticipantImpl *p = ps[i];
            threads.push_back(std::thread([this, p, &failed, &failure]() {
                std::shared_ptr<Error> e = p->serve(stopping_);
                if (!e) return;
                std::fprintf(stderr, "msgflo: serving failed: %s\n", e->what());
                std::lock_guard<std::mutex> lock(failed);
                if (!failure) failure = e;
                stopping_ = true; // every participant stops, launch() throws
            }));
        }
        if (on_signals_) {
            // Polls in slices so that it ends with launch() when stop()
            // is called; a signal between slices is kept by the core.
            threads.push_back(std::thread([this]() {
                try {
                    while (!stopping_) {
                        if (ffi::wait_stop_signal(200)) stopping_ = true;
                    }
                } catch (const rust::Error &) {
                    // Cannot wait for signals: launch() runs until stop().
                }
            }));
        }
        for (std::size_t i = 0; i < threads.size(); ++i) threads[i].join();
        for (std::size_t i = 0; i < ps.size(); ++i) ps[i]->stop();
        if (failure) throw *failure;
    }

    void stop() override { stopping_ = true; }

    void stopOnSignals() override {
        call([] { ffi::listen_stop_signals(); });
        on_signals_ = true;
    }

    std::string readinessLine() const override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::string lines;
        for (const auto &p : participants_) {
            if (!lines.empty()) lines += "\n";
            lines += p->readinessLine();
        }
        return lines;
    }

    std::string broker() const override {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!participants_.empty()) return participants_.front()->broker();
        const std::string &url = config_.url();
        return std::string(call([&] { return ffi::resolve_broker(str(url)); }));
    }

private:
    EngineConfig config_;
    std::atomic<bool> stopping_;
    std::atomic<bool> on_signals_;
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<ParticipantImpl>> participants_;
};

} // namespace

EngineConfig::EngineConfig() : prefetch_(call([] { return ffi::default_prefetch(); })) {}

EngineConfig &EngineConfig::url(const std::string &url) {
    url_ = url;
    return *this;
}

EngineConfig &EngineConfig::prefetch(uint16_t prefetch) {
    prefetch_ = prefetch;
    return *this;
}

std::shared_ptr<Engine> createEngine(const EngineConfig &config) {
    return std::shared_ptr<Engine>(new EngineImpl(config));
}

} // namespace msgflo

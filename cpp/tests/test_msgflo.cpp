// Tests of the C++ API against real brokers (RabbitMQ and Mosquitto on
// loopback, or MSGFLO_TEST_AMQP / MSGFLO_TEST_MQTT). Ends with a line
// "N passed, N failed"; exit status 1 on any failure.
// Queues are named cpptest-*; scripts/test deletes them on RabbitMQ after.
#include <msgflo/msgflo.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

namespace {

int passed = 0, failed = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::ostringstream os;                                                   \
            os << __FILE__ << ":" << __LINE__ << ": check failed: " #cond;           \
            throw std::runtime_error(os.str());                                      \
        }                                                                            \
    } while (0)

std::string env(const char *name, const char *fallback) {
    const char *v = std::getenv(name);
    return v && *v ? v : fallback;
}

std::string unique(const std::string &prefix) {
    static std::mt19937_64 rng(std::random_device{}() ^ std::chrono::steady_clock::now().time_since_epoch().count());
    std::ostringstream os;
    os << "cpptest-" << prefix << "-" << std::hex << (rng() & 0xffffffffffULL);
    return os.str();
}

// Collects what a driver participant receives.
struct Inbox {
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::string> items;
    void push(const std::string &s) {
        std::lock_guard<std::mutex> l(m);
        items.push_back(s);
        cv.notify_all();
    }
    bool waitFor(std::size_t n, int seconds = 10) {
        std::unique_lock<std::mutex> l(m);
        return cv.wait_for(l, std::chrono::seconds(seconds), [&] { return items.size() >= n; });
    }
};

// An engine with the participant under test (ports in/out[/error]) and a
// driver whose outport feeds its inport and whose inports read its outports.
struct Rig {
    std::shared_ptr<msgflo::Engine> engine;
    msgflo::Participant *subject = nullptr;
    msgflo::Participant *driver = nullptr;
    Inbox out, errors;
    std::thread launcher;
    std::string role;

    Rig(const std::string &broker, msgflo::MessageHandler handler, bool errorPort = false) {
        engine = msgflo::createEngine(msgflo::EngineConfig().url(broker));
        role = unique("subj");
        msgflo::Definition def;
        def.component = "C++Subject";
        def.role = role;
        def.inports = {{"in", "any", ""}};
        def.outports = {{"out", "any", ""}};
        if (errorPort) def.outports.push_back({"error", "object", ""});
        subject = engine->registerParticipant(def, handler);
        msgflo::Definition d;
        d.component = "C++Driver";
        d.role = unique("drv");
        d.outports = {{"to", "any", role + ".IN"}};
        d.inports = {{"out", "any", role + ".OUT"}};
        if (errorPort) d.inports.push_back({"error", "any", role + ".ERROR"});
        driver = engine->registerParticipant(d, [this](msgflo::Message *m) {
            (m->port() == "out" ? out : errors).push(m->asString());
            m->ack();
        });
        // No pause before sending: registerParticipant() returns once the
        // ports are declared and subscribed (AMQP: queues bound, consumers
        // on; MQTT: SUBACK received), and what arrives before launch()
        // serves waits in the core for it. The tests send straight away
        // and so check that; every wait for a result is Inbox::waitFor,
        // with a deadline.
        launcher = std::thread([this] { engine->launch(); });
    }
    ~Rig() {
        engine->stop();
        launcher.join();
    }
};

void run(const std::string &name, std::function<void()> test) {
    try {
        test();
        ++passed;
        std::cout << "ok - " << name << std::endl;
    } catch (const std::exception &e) {
        ++failed;
        std::cout << "FAILED - " << name << ": " << e.what() << std::endl;
    }
}

} // namespace

int main() {
    const std::string brokers[] = {env("MSGFLO_TEST_AMQP", "amqp://127.0.0.1:5672"),
                                   env("MSGFLO_TEST_MQTT", "mqtt://127.0.0.1:1883")};
    for (const std::string &broker : brokers) {
        const std::string on = " on " + broker.substr(0, broker.find(':'));

        run("repeat JSON, text and binary (with NUL bytes) unchanged" + on, [&] {
            msgflo::Participant *self = nullptr;
            Rig rig(broker, [&self](msgflo::Message *m) {
                self->send("out", m->asString());
                m->ack();
            });
            self = rig.subject;
            CHECK(rig.subject->definition().inports[0].queue == rig.role + ".IN");
            CHECK(rig.subject->discovery().find("\"C++Subject\"") != std::string::npos);
            const std::string binary("\x00\xff\x01\x00", 4);
            rig.driver->send("to", "{\"a\":[1,2.5]}");
            rig.driver->send("to", "plain text");
            rig.driver->send("to", binary.data(), binary.size());
            CHECK(rig.out.waitFor(3));
            CHECK(rig.out.items[0] == "{\"a\":[1,2.5]}");
            CHECK(rig.out.items[1] == "plain text");
            CHECK(rig.out.items[2] == binary);
        });

        run("a throwing handler nacks, feeds the error port, and the participant keeps running" + on, [&] {
            msgflo::Participant *self = nullptr;
            Rig rig(broker, [&self](msgflo::Message *m) {
                if (m->asString() == "\"boom\"") throw std::runtime_error("boom requested");
                self->send("out", m->asString());
                m->ack();
            }, true);
            self = rig.subject;
            rig.driver->send("to", "\"boom\"");
            rig.driver->send("to", "\"fine\"");
            CHECK(rig.out.waitFor(1));
            CHECK(rig.out.items[0] == "\"fine\"");
            CHECK(rig.errors.waitFor(1));
            CHECK(rig.errors.items[0] == "{\"error\":\"boom requested\"}"); // the core's error body
        });

        run("unknown port, second ack and NaN JSON are msgflo::Error with codes" + on, [&] {
            std::atomic<int> codes(0);
            msgflo::Participant *self = nullptr;
            Rig rig(broker, [&](msgflo::Message *m) {
                m->ack();
                try { m->ack(); } catch (const msgflo::Error &e) { if (e.code() == "ALREADY_COMPLETED") codes++; }
                try { self->send("nope", "1"); } catch (const msgflo::Error &e) { if (e.code() == "UNKNOWN_PORT") codes++; }
                try { self->sendJson("out", "NaN"); } catch (const msgflo::Error &e) { if (e.code() == "INVALID_PAYLOAD") codes++; }
                self->sendJson("out", "{\"text\":\"\u00e6\"}");
            });
            self = rig.subject;
            rig.driver->send("to", "1");
            CHECK(rig.out.waitFor(1));
            CHECK(codes == 3);
            CHECK(rig.out.items[0] == "{\"text\":\"\u00e6\"}"); // NaN was not sent
        });

        run("send is safe from several threads at once" + on, [&] {
            Rig rig(broker, [](msgflo::Message *m) { m->ack(); });
            std::vector<std::thread> threads;
            for (int t = 0; t < 4; ++t) {
                threads.push_back(std::thread([&rig, t] {
                    for (int i = 0; i < 250; ++i) rig.subject->send("out", std::to_string(t * 1000 + i));
                }));
            }
            for (auto &th : threads) th.join();
            CHECK(rig.out.waitFor(1000, 20));
            CHECK(rig.out.items.size() == 1000);
        });
    }

    run("bad URL and unreachable broker", [&] {
        msgflo::Definition def;
        def.component = "X";
        def.role = "x";
        std::string code;
        try { msgflo::createEngine(msgflo::EngineConfig().url("http://nope"))->registerParticipant(def); }
        catch (const msgflo::Error &e) { code = e.code(); }
        CHECK(code == "INVALID_URL");
        try { msgflo::createEngine(msgflo::EngineConfig().url("amqp://127.0.0.1:1"))->registerParticipant(def); }
        catch (const std::runtime_error &e) { code = dynamic_cast<const msgflo::Error &>(e).code(); }
        CHECK(code == "CONNECTION");
        code.clear();
        try { msgflo::createEngine(msgflo::EngineConfig().prefetch(0))->registerParticipant(def); }
        catch (const msgflo::Error &e) { code = e.code(); }
        CHECK(code == "INVALID_DEFINITION"); // prefetch 0 is refused, in every language
        CHECK(msgflo::EngineConfig().prefetch() > 0);
    });

    run("hidden and transient ports, typed definition (aggregate Port init unchanged)", [&] {
        msgflo::Definition def;
        def.component = "Typed";
        def.role = unique("typed");
        def.inports = {{"in", "any", ""}};
        def.outports = {{"out", "any", ""}, {"tmp", "", ""}};
        def.hiddenPorts = {"out"};
        def.transientPorts = {"tmp"};
        auto engine = msgflo::createEngine(msgflo::EngineConfig().url(env("MSGFLO_TEST_MQTT", "mqtt://127.0.0.1:1883")));
        msgflo::Participant *p = engine->registerParticipant(def);
        CHECK(p->definition().inports[0].queue == def.role + ".IN");
        CHECK(p->definition().outports[0].queue.empty()); // hidden: no queue
        CHECK(p->definition().outports[1].queue == def.role + ".TMP");
        CHECK(p->discovery().find("\"out\"") == std::string::npos); // hidden: not announced
        CHECK(p->discovery().find("\"queue\":\"" + def.role + ".TMP\"") != std::string::npos);
    });

    std::cout << passed << " passed, " << failed << " failed" << std::endl;
    return failed ? 1 : 0;
}
